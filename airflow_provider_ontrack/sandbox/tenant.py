"""The sandbox tenant: deterministic seeded workers, locations and assets in a validated in-memory store.

Everything a seeded tenant holds comes from ``random.Random(seed)`` and the fixed ``now``, so two tenants
built with the same seed and ``now`` hold identical records. The store keeps a sorted id list and a
(lastModifiedDate, id) index per resource so that paging and change windows stay cheap on big tenants.
"""

from __future__ import annotations

import bisect
import math
import random
import re
import threading
import time
import uuid
from datetime import date, datetime, timedelta, timezone
from typing import Any

RESOURCES = ("workers", "locations", "assets")

WORKER_FIELDS = (
    "id",
    "externalId",
    "firstName",
    "lastName",
    "designation",
    "email",
    "mobilePhone",
    "costCenter",
    "contractType",
    "isUser",
    "roleId",
    "lastModifiedDate",
)
LOCATION_FIELDS = (
    "id",
    "externalId",
    "ontrackId",
    "origin",
    "name",
    "type",
    "managerId",
    "description",
    "scanCode",
    "costCenter",
    "addressLine1",
    "addressLine2",
    "city",
    "state",
    "postalCode",
    "country",
    "locationState",
    "labels",
    "lastModifiedDate",
)
ASSET_FIELDS = (
    "id",
    "externalId",
    "ontrackId",
    "name",
    "description",
    "scanCode",
    "inventoryNumber",
    "serialNumber",
    "manufacturerName",
    "model",
    "categoryCode",
    "assetType",
    "status",
    "ownershipType",
    "currentLocationId",
    "responsibleWorkerId",
    "parentAssetId",
    "costCode",
    "purchasePrice",
    "purchaseCurrency",
    "purchaseDate",
    "purchaseOrderNumber",
    "vendor",
    "labels",
    "lastModifiedDate",
)
FIELDS = {"workers": WORKER_FIELDS, "locations": LOCATION_FIELDS, "assets": ASSET_FIELDS}

# Fields a client may send but never set: the server owns them.
SERVER_FIELDS = {
    "workers": ("id", "lastModifiedDate"),
    "locations": ("id", "lastModifiedDate", "ontrackId", "origin"),
    "assets": ("id", "lastModifiedDate", "ontrackId"),
}

REQUIRED = {
    "workers": ("firstName", "lastName"),
    "locations": ("name", "type", "managerId"),
    "assets": ("name", "currentLocationId"),
}

ENUMS = {
    "workers": {"contractType": ("FULL_TIME", "TEMPORARY", "AGENCY")},
    "locations": {"type": ("JOBSITE", "WAREHOUSE"), "locationState": ("ACTIVE", "INACTIVE")},
    "assets": {
        "status": ("ACTIVE", "DISPOSED", "LOST", "IN_REPAIR"),
        "assetType": ("ASSET", "STORAGE_ASSET"),
        "ownershipType": ("OWNED", "RENTED", "LEASED", "FLEET"),
    },
}

# Kinds of the non-string fields; every other known field must be a string (or null).
FIELD_KINDS = {
    "workers": {"isUser": "bool"},
    "locations": {"labels": "labels"},
    "assets": {"labels": "labels", "purchasePrice": "number", "purchaseDate": "date"},
}

SINGULAR = {"workers": "worker", "locations": "location", "assets": "asset"}

TRANSFER_TARGETS = ("toLocationId", "toWorkerId", "toStorageAssetId")


class ValidationError(Exception):
    """A request body or query broke a rule; ``details`` name the offending fields."""

    def __init__(self, message: str, details: list[dict[str, str]] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or []


class NotFoundError(Exception):
    """The addressed record does not exist."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


# ---------------------------------------------------------------------------------------------------------
# Time helpers
# ---------------------------------------------------------------------------------------------------------

_ISO_RE = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})"
    r"(?:[Tt ](\d{2}):(\d{2})(?::(\d{2})(?:[.,](\d{1,9}))?)?"
    r"\s*([Zz]|[+\- ]\d{2}:?\d{2})?)?$"
)


def format_timestamp(moment: datetime) -> str:
    """ISO 8601 in UTC with a ``Z`` and millisecond precision, the API's timestamp format."""
    moment = moment.astimezone(timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def truncate_ms(moment: datetime) -> datetime:
    """Drop sub-millisecond digits, so stored datetimes equal what the API shows."""
    return moment.replace(microsecond=moment.microsecond - moment.microsecond % 1000)


def parse_timestamp(text: str) -> datetime:
    """Read ``YYYY-MM-DD`` or ``YYYY-MM-DDTHH:MM[:SS[.fff]]`` with optional ``Z``/``±HH:MM``; no zone = UTC.

    A space where the offset sign should be is read as ``+``: an unencoded ``+`` in a query string
    arrives as a space. Raises ``ValueError`` on anything else.
    """
    match = _ISO_RE.match(text.strip())
    if not match:
        raise ValueError(f"not an ISO 8601 date or date-time: {text!r}")

    year, month, day, hour, minute, second, fraction, zone = match.groups()
    micro = int((fraction or "0")[:6].ljust(6, "0"))
    tz = timezone.utc
    if zone and zone not in ("Z", "z"):
        sign = -1 if zone[0] == "-" else 1
        digits = zone[1:].replace(":", "")
        tz = timezone(sign * timedelta(hours=int(digits[:2]), minutes=int(digits[2:])))

    moment = datetime(
        int(year), int(month), int(day), int(hour or 0), int(minute or 0), int(second or 0), micro, tzinfo=tz
    )
    return moment.astimezone(timezone.utc)


def coerce_now(now: datetime | str | None) -> datetime | None:
    """Accept ``now`` as an aware/naive datetime or ISO text; naive means UTC."""
    if now is None:
        return None

    if isinstance(now, str):
        return parse_timestamp(now)

    if now.tzinfo is None:
        return now.replace(tzinfo=timezone.utc)

    return now.astimezone(timezone.utc)


# ---------------------------------------------------------------------------------------------------------
# Seed material
# ---------------------------------------------------------------------------------------------------------

# (first name, last name, ascii mail local part, phone prefix)
_PEOPLE = (
    ("Jonas", "Müller", "jonas.mueller", "+49 151"),
    ("Zoë", "Ångström", "zoe.angstrom", "+46 70"),
    ("Łukasz", "Wiśniewski", "lukasz.wisniewski", "+48 601"),
    ("Sofía", "Núñez", "sofia.nunez", "+34 612"),
    ("健", "佐藤", "ken.sato", "+81 90"),
    ("芳", "王", "fang.wang", "+86 138"),
    ("Νίκος", "Παπαδόπουλος", "nikos.papadopoulos", "+30 694"),
    ("Дмитрий", "Иванов", "dmitry.ivanov", "+49 160"),
    ("محمد", "الأحمد", "mohammed.alahmad", "+971 50"),
    ("Ayşe", "Yılmaz", "ayse.yilmaz", "+90 532"),
    ("Siobhán", "O'Brien", "siobhan.obrien", "+353 87"),
    ("Émile", "Gagnon", "emile.gagnon", "+1 514"),
    ("John", "Smith", "john.smith", "+1 212"),
    ("Emily", "Johnson", "emily.johnson", "+1 469"),
    ("Michael", "Brown", "michael.brown", "+44 7700"),
    ("Sarah", "Davis", "sarah.davis", "+44 7911"),
    ("David", "Wilson", "david.wilson", "+1 972"),
    ("Anna", "Schmid", "anna.schmid", "+41 79"),
    ("Marco", "Rossi", "marco.rossi", "+39 347"),
    ("Ingrid", "Hofer", "ingrid.hofer", "+43 664"),
    ("Priya", "Sharma", "priya.sharma", "+44 7825"),
    ("Lukas", "Gassner", "lukas.gassner", "+423 79"),
    ("Chloé", "Dubois", "chloe.dubois", "+33 6"),
    ("민준", "김", "minjun.kim", "+82 10"),
    ("Kevin", "O'Neill", "kevin.oneill", "+44 7403"),
    ("José", "Álvarez", "jose.alvarez", "+34 655"),
    ("Bartosz", "Kowalczyk", "bartosz.kowalczyk", "+48 509"),
    ("Olga", "Petrova", "olga.petrova", "+49 176"),
)
_EXTRA_FIRST = ("James", "Mary", "Robert", "Linda", "William", "Karen", "Daniel", "Lisa", "Paul", "Nancy")
_EXTRA_LAST = ("Miller", "Moore", "Clark", "Lewis", "Walker", "Hall", "Young", "King", "Wright", "Scott")
_MAIL_DOMAIN = "bauwerk-sandbox.example"

_DESIGNATIONS = (
    "Site Manager",
    "Foreman",
    "Electrician",
    "Tool Crib Attendant",
    "Project Engineer",
    "Plumber",
    "Carpenter",
    "HVAC Technician",
    "Site Supervisor",
    "Fleet Manager",
    "Apprentice",
    "Surveyor",
)
_COST_CENTERS = ("CC-1000", "CC-1100", "CC-2100", "CC-2200", "CC-3050", "CC-4100", "CC-7200")

# (name, type, address line 1, address line 2, city, state, postal code, country)
_SITES = (
    (
        "Baustelle Zürich-Oerlikon",
        "JOBSITE",
        "Binzmühlestrasse 80",
        "Baufeld B",
        "Zürich",
        "ZH",
        "8050",
        "CH",
    ),
    ("Main Warehouse Schaan", "WAREHOUSE", "Feldkircher Strasse 100", None, "Schaan", None, "9494", "LI"),
    ("東京 渋谷 現場", "JOBSITE", "渋谷2丁目21-1", "第3工区", "渋谷区", "東京都", "150-0002", "JP"),
    (
        "Warszawa Magazyn Centralny",
        "WAREHOUSE",
        "ul. Marszałkowska 104",
        "Brama 3",
        "Warszawa",
        "mazowieckie",
        "00-017",
        "PL",
    ),
    (
        "Baustelle München Werksviertel",
        "JOBSITE",
        "Atelierstraße 10",
        None,
        "München",
        "Bayern",
        "81671",
        "DE",
    ),
    (
        "Wien Hauptbahnhof Erweiterung",
        "JOBSITE",
        "Am Hauptbahnhof 1",
        "Bauteil C",
        "Wien",
        "Wien",
        "1100",
        "AT",
    ),
    ("Hudson Yards Tower C", "JOBSITE", "500 W 33rd St", "Gate 4", "New York", "NY", "10001", "US"),
    ("Dallas Distribution Center", "WAREHOUSE", "7250 Dallas Pkwy", "Dock 12", "Plano", "TX", "75024", "US"),
    (
        "Manchester Northern Quarter Refit",
        "JOBSITE",
        "45 Oldham St",
        None,
        "Manchester",
        "Greater Manchester",
        "M1 1JG",
        "GB",
    ),
    (
        "Lager Berlin-Marienfelde",
        "WAREHOUSE",
        "Motzener Straße 12",
        "Halle 2",
        "Berlin",
        "Berlin",
        "12277",
        "DE",
    ),
    (
        "Kraków Nowa Huta Osiedle",
        "JOBSITE",
        "al. Jana Pawła II 41",
        None,
        "Kraków",
        "małopolskie",
        "31-864",
        "PL",
    ),
    (
        "Chantier Lyon Part-Dieu",
        "JOBSITE",
        "17 Rue de la Villette",
        "Lot 2",
        "Lyon",
        "Auvergne-Rhône-Alpes",
        "69003",
        "FR",
    ),
)
_LOCATION_LABELS = (
    "high-rise",
    "night-shift",
    "indoor",
    "bonded",
    "24/7",
    "restricted-access",
    "Prüfpflicht",
)
_LOCATION_NOTES = (
    None,
    None,
    "Anlieferung nur Mo–Fr 7–16 Uhr",
    "Hard hats and hi-vis beyond gate 4",
    "立入禁止区域あり",
    "Magazyn z rampą załadunkową",
    "Crane slot bookings via site office",
)

_CURRENCY = {
    "CH": "CHF",
    "LI": "CHF",
    "DE": "EUR",
    "AT": "EUR",
    "FR": "EUR",
    "US": "USD",
    "GB": "GBP",
    "JP": "JPY",
    "PL": "PLN",
}
_FX = {"CHF": 0.95, "EUR": 1.0, "USD": 1.08, "GBP": 0.86, "JPY": 162.0, "PLN": 4.3}

# (manufacturer, model, name, category, min price EUR, max price EUR, serial prefix)
_TOOLS = (
    ("Hilti", "TE 30-A36", "TE 30-A36 rotary hammer", "ROTARY_HAMMER", 950, 1350, "HT"),
    ("Hilti", "SF 6-A22", "SF 6-A22 cordless drill driver", "DRILL_DRIVER", 280, 420, "HT"),
    ("Hilti", "SID 6-22", "SID 6-22 impact driver", "IMPACT_DRIVER", 260, 390, "HT"),
    ("Hilti", "AG 125-A22", "AG 125-A22 angle grinder", "ANGLE_GRINDER", 310, 460, "HT"),
    ("Hilti", "PD-E", "PD-E laser range meter", "LASER_RANGE_METER", 350, 520, "HT"),
    ("Hilti", "PR 30-HVS A12", "PR 30-HVS A12 rotating laser", "ROTATING_LASER", 1900, 2600, "HT"),
    ("Hilti", "DX 5", "DX 5 powder-actuated tool", "DIRECT_FASTENING", 700, 980, "HT"),
    ("Hilti", "DD 150-U", "DD 150-U diamond coring tool", "DIAMOND_CORING", 2400, 3300, "HT"),
    ("Hilti", "WSC 6.5-A22", "WSC 6.5-A22 circular saw", "CIRCULAR_SAW", 330, 480, "HT"),
    ("Hilti", "SCW 22-A", "SCW 22-A cordless circular saw", "CIRCULAR_SAW", 300, 430, "HT"),
    ("Hilti", "B 22-255", "Nuron battery B 22-255", "BATTERY", 120, 190, "HB"),
    ("Hilti", "TE 70-ATC/AVR", "TE 70-ATC/AVR combihammer", "ROTARY_HAMMER", 1500, 2100, "HT"),
    ("Hilti", "PM 30-MG", "PM 30-MG multi-line laser", "LINE_LASER", 800, 1150, "HT"),
    ("Hilti", "VC 40L-X", "VC 40L-X vacuum cleaner", "VACUUM", 700, 950, "HT"),
    ("Makita", "DHR243Z", "Makita DHR243Z SDS-plus rotary hammer", "ROTARY_HAMMER", 190, 280, "MK"),
    ("Makita", "DGA504Z", "Makita DGA504Z angle grinder", "ANGLE_GRINDER", 150, 230, "MK"),
    ("Bosch", "GBH 2-28 F", "Bosch GBH 2-28 F rotary hammer", "ROTARY_HAMMER", 250, 340, "BO"),
    ("Bosch", "GLM 50-27 CG", "Bosch GLM 50-27 CG laser measure", "LASER_RANGE_METER", 150, 210, "BO"),
    ("DeWalt", "DCD796", "DeWalt DCD796 hammer drill driver", "DRILL_DRIVER", 160, 240, "DW"),
    ("DeWalt", "DCS570", "DeWalt DCS570 circular saw", "CIRCULAR_SAW", 200, 290, "DW"),
    ("Milwaukee", "M18 FPD2", "Milwaukee M18 FPD2 percussion drill", "DRILL_DRIVER", 210, 310, "MW"),
    ("Milwaukee", "M18 FHIWF12", "Milwaukee M18 FHIWF12 impact wrench", "IMPACT_WRENCH", 290, 400, "MW"),
    ("Festool", "TS 55 FEBQ", "Festool TS 55 FEBQ plunge-cut saw", "CIRCULAR_SAW", 520, 690, "FE"),
    ("Festool", "CTL 26 E", "Festool CTL 26 E dust extractor", "VACUUM", 480, 620, "FE"),
    ("Stihl", "TS 420", "Stihl TS 420 cut-off saw", "CUT_OFF_SAW", 1050, 1350, "ST"),
    ("Stihl", "MS 261", "Stihl MS 261 chainsaw", "CHAINSAW", 750, 950, "ST"),
    ("Atlas Copco", "XAS 58", "Atlas Copco XAS 58 portable compressor", "COMPRESSOR", 14000, 19000, "AC"),
    ("Caterpillar", "XQ60", "Caterpillar XQ60 mobile generator", "GENERATOR", 28000, 36000, "CAT"),
    ("Zarges", "Skymaster 41286", "Zarges Skymaster step ladder", "LADDER", 260, 380, "ZA"),
    ("Layher", "Allround K2000+", "Layher Allround scaffolding set", "SCAFFOLDING", 4200, 6800, "LY"),
    ("Wacker Neuson", "BS 60-4As", "Wacker Neuson BS 60-4As rammer", "COMPACTION", 3800, 4900, "WN"),
    ("Husqvarna", "K 770", "Husqvarna K 770 power cutter", "CUT_OFF_SAW", 900, 1200, "HQ"),
)
# (manufacturer, model, kind of storage, category, min price EUR, max price EUR, serial prefix)
_STORAGE = (
    ("Mercedes-Benz", "Sprinter 316 CDI", "Service van", "VAN", 38000, 52000, "WDB"),
    ("Volkswagen", "Crafter 35", "Service van", "VAN", 36000, 49000, "WV1"),
    ("Ford", "Transit Custom", "Service van", "VAN", 31000, 42000, "WF0"),
    ("Containex", "LC 20'", "Site container", "CONTAINER", 3500, 5200, "CX"),
    ("Knaack", "89 Jobmaster", "Gang box", "GANG_BOX", 1100, 1600, "KN"),
    ("Würth", "ORSY 1000", "Tool trolley", "TOOL_TROLLEY", 600, 900, "WU"),
    ("Milwaukee", "PACKOUT 48-22-8426", "Rolling tool box", "TOOL_BOX", 180, 260, "MW"),
)
_ASSET_NOTES = (
    "Akku-Bohrhammer mit Staubabsaugung – für Betonarbeiten",
    "充電式、予備バッテリー2個付き",
    "Перфоратор в кейсе, набор буров в комплекте",
    "Walizka z ładowarką — sprawdzić szczotki",
    "Ελέγχθηκε για ασφάλεια",
    "🔧 Service due next month",
    "⚠️ Schutzhaube beschädigt – nicht benutzen",
    "أداة قطع ماسية للاستخدام الخارجي",
    "Coffret complet, chargeur et 2 batteries 🔋",
    "Yedek batarya ile birlikte teslim edildi",
    "Used on level 12, returned clean ✅",
    "Kalibriert am Jahresanfang",
)
_ASSET_LABELS = (
    "calibration-due",
    "heavy",
    "nuron",
    "fleet-2024",
    "dust-class-M",
    "rental-return",
    "priority",
    "outdoor",
    "Prüfung fällig",
    "要点検",
)
_VENDORS = ("Würth", "Grainger", "Toolstation", "Hoffmann Group", "Kaiser+Kraft", "Brandon Hire", "Rexel")

_STATUS_WEIGHTS = (("ACTIVE", 0.85), ("IN_REPAIR", 0.07), ("LOST", 0.04), ("DISPOSED", 0.04))
_OWNERSHIP_WEIGHTS = (("OWNED", 0.6), ("FLEET", 0.2), ("RENTED", 0.12), ("LEASED", 0.08))

_SEED_WINDOW_MS = 180 * 86_400 * 1000


def _weighted(rng: random.Random, table: tuple[tuple[str, float], ...]) -> str:
    """Pick from ``table`` by weight with one draw, so the draw count per record stays fixed."""
    roll = rng.random()
    for value, weight in table:
        roll -= weight
        if roll < 0:
            return value

    return table[-1][0]


def _seeded_id(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


# ---------------------------------------------------------------------------------------------------------
# The store
# ---------------------------------------------------------------------------------------------------------


class Tenant:
    """In-memory ON!Track tenant: seeded records, validation, paging, change windows and transfers.

    All methods are thread-safe. Stored records are replaced, never changed in place, so a page handed
    out keeps its content while other threads write.
    """

    def __init__(
        self,
        seed: int = 7,
        now: datetime | str | None = None,
        worker_count: int = 25,
        location_count: int = 12,
        asset_count: int = 1500,
    ) -> None:
        given = coerce_now(now)
        real_now = datetime.now(timezone.utc)

        self.seed = seed
        self.now = (given or real_now).replace(second=0, microsecond=0)
        self.worker_count = worker_count
        self.location_count = location_count
        self.asset_count = asset_count

        # The sandbox clock runs on from the given `now` (or from the real time) at real speed.
        self._clock_base = given or real_now
        self._clock_start = time.monotonic()

        self._lock = threading.RLock()
        self.reset()

    # -- clock ----------------------------------------------------------------------------------------------

    def clock(self) -> datetime:
        """The sandbox's current time (UTC): ``now`` plus the real time elapsed since construction."""
        return self._clock_base + timedelta(seconds=time.monotonic() - self._clock_start)

    # -- seeding --------------------------------------------------------------------------------------------

    def reset(self) -> None:
        """Throw away every change and rebuild the seeded tenant from the seed and ``now``."""
        with self._lock:
            self._records: dict[str, dict[str, dict[str, Any]]] = {name: {} for name in RESOURCES}
            self._dates: dict[str, dict[str, datetime]] = {name: {} for name in RESOURCES}
            self._transfers: dict[str, dict[str, Any]] = {}
            self._version = dict.fromkeys(RESOURCES, 0)
            self._window_cache: dict[str, tuple[int, int, int, list[str]]] = {}

            rng = random.Random(self.seed)
            self._seed_workers(rng)
            self._seed_locations(rng)
            self._seed_assets(rng)

            self._ids = {name: sorted(self._records[name]) for name in RESOURCES}
            self._by_date = {
                name: sorted((moment, rid) for rid, moment in self._dates[name].items()) for name in RESOURCES
            }
            self._next_ontrack_id = 9_000_000

    def _seed_date(self, rng: random.Random) -> datetime:
        return self.now - timedelta(milliseconds=rng.randint(1, _SEED_WINDOW_MS))

    def _put_seeded(self, resource: str, record: dict[str, Any], moment: datetime) -> None:
        record["lastModifiedDate"] = format_timestamp(moment)
        self._records[resource][record["id"]] = record
        self._dates[resource][record["id"]] = moment

    def _seed_workers(self, rng: random.Random) -> None:
        people = list(_PEOPLE)
        for extra in range(max(0, self.worker_count - len(people))):
            first = _EXTRA_FIRST[rng.randrange(len(_EXTRA_FIRST))]
            last = _EXTRA_LAST[rng.randrange(len(_EXTRA_LAST))]
            people.append((first, last, f"{first}.{last}.{extra + 1}".lower(), "+1 555"))

        hr_numbers = rng.sample(range(10_000, 100_000), self.worker_count) if self.worker_count else []
        user_slots = {0: "ADMIN", 3: "EVERYONE", 6: "EVERYONE", 12: "SITE_MANAGER", 17: "EVERYONE"}
        for index in range(self.worker_count):
            first, last, local, phone_prefix = people[index]
            role = user_slots.get(index)
            has_mail = role is not None or rng.random() < 0.85
            record = {
                "id": _seeded_id(rng),
                "externalId": f"HR-{hr_numbers[index]}" if rng.random() < 0.85 else None,
                "firstName": first,
                "lastName": last,
                "designation": _DESIGNATIONS[rng.randrange(len(_DESIGNATIONS))],
                "email": f"{local}@{_MAIL_DOMAIN}" if has_mail else None,
                "mobilePhone": f"{phone_prefix} {rng.randint(1_000_000, 9_999_999)}"
                if rng.random() < 0.9
                else None,
                "costCenter": _COST_CENTERS[rng.randrange(len(_COST_CENTERS))],
                "contractType": _weighted(rng, (("FULL_TIME", 0.8), ("TEMPORARY", 0.12), ("AGENCY", 0.08))),
                "isUser": role is not None,
                "roleId": role,
            }
            self._put_seeded("workers", record, self._seed_date(rng))

        self._worker_ids = list(self._records["workers"])

    def _seed_locations(self, rng: random.Random) -> None:
        inactive = set(rng.sample(range(self.location_count), min(2, max(0, self.location_count - 1))))
        self._location_country: dict[str, str] = {}
        for index in range(self.location_count):
            name, kind, line1, line2, city, state, postal, country = _SITES[index % len(_SITES)]
            if index >= len(_SITES):
                name = f"{name} – Phase {index // len(_SITES) + 1}"

            manager = self._worker_ids[rng.randrange(len(self._worker_ids))] if self._worker_ids else None
            labels = rng.sample(_LOCATION_LABELS, rng.randint(0, 2))
            record = {
                "id": _seeded_id(rng),
                "externalId": f"SITE-{index + 101:04d}" if rng.random() < 0.9 else None,
                "ontrackId": str(4_100_000 + index * 37 + rng.randint(0, 30)),
                "origin": "ONTRACK",
                "name": name,
                "type": kind,
                "managerId": manager,
                "description": _LOCATION_NOTES[rng.randrange(len(_LOCATION_NOTES))],
                "scanCode": f"LOC-{rng.randint(100_000, 999_999)}-{index:03d}",
                "costCenter": _COST_CENTERS[rng.randrange(len(_COST_CENTERS))],
                "addressLine1": line1,
                "addressLine2": line2,
                "city": city,
                "state": state,
                "postalCode": postal,
                "country": country,
                "locationState": "INACTIVE" if index in inactive else "ACTIVE",
                "labels": labels,
            }
            self._put_seeded("locations", record, self._seed_date(rng))
            self._location_country[record["id"]] = country

        self._location_ids = list(self._records["locations"])

    def _seed_assets(self, rng: random.Random) -> None:
        if not self._location_ids:
            return

        total = self.asset_count
        storage_total = min(total, max(1, round(total * 40 / 1500))) if total else 0
        serials: set[str] = set()
        scans: set[str] = set()
        inventory_base = rng.randint(1_000, 4_000)
        storage_ids: list[str] = []
        storage_home: dict[str, str] = {}
        workers = self._worker_ids
        locations = self._location_ids
        today = self.now.date()

        # Plain random() draws: the library's randrange() costs too much over 100,000 assets.
        roll = rng.random
        label_count = len(_ASSET_LABELS)

        for index in range(total):
            is_storage = index < storage_total
            catalog = _STORAGE if is_storage else _TOOLS
            maker, model, label, category, low, high, prefix = catalog[int(roll() * len(catalog))]

            location = locations[int(roll() * len(locations))]
            parent = None
            if not is_storage and storage_ids and roll() < 0.2:
                parent = storage_ids[int(roll() * len(storage_ids))]
                location = storage_home[parent]

            serial = f"{prefix}{10_000_000 + int(roll() * 90_000_000)}"
            while serial in serials:
                serial = f"{prefix}{10_000_000 + int(roll() * 90_000_000)}"
            serials.add(serial)

            scan = f"{10**11 + int(roll() * 9 * 10**11)}"
            while scan in scans:
                scan = f"{10**11 + int(roll() * 9 * 10**11)}"
            scans.add(scan)

            currency = _CURRENCY[self._location_country[location]]
            price = (low + (high - low) * roll()) * _FX[currency]
            price_value: float | int = int(round(price, -2)) if currency == "JPY" else round(price, 2)
            bought = today - timedelta(days=30 + int(roll() * 8 * 365))
            first_label = int(roll() * label_count)
            labels = [_ASSET_LABELS[(first_label + k) % label_count] for k in range(int(roll() * 4))]
            note_roll = roll()
            worker = workers[int(roll() * len(workers))] if workers and roll() < 0.8 else None
            vendor = _VENDORS[int(roll() * len(_VENDORS))]
            order_roll = roll()

            record = {
                "id": _seeded_id(rng),
                "externalId": f"ERP-A-{index + 1:06d}" if roll() < 0.9 else None,
                "ontrackId": str(7_000_000 + index),
                "name": f"{label} {index + 1:03d}" if is_storage else label,
                "description": _ASSET_NOTES[int(note_roll * 100) % len(_ASSET_NOTES)]
                if note_roll < 0.25
                else None,
                "scanCode": scan,
                "inventoryNumber": f"INV-{inventory_base + index:06d}",
                "serialNumber": serial,
                "manufacturerName": maker,
                "model": model,
                "categoryCode": category,
                "assetType": "STORAGE_ASSET" if is_storage else "ASSET",
                "status": "ACTIVE" if is_storage else _weighted(rng, _STATUS_WEIGHTS),
                "ownershipType": _weighted(rng, _OWNERSHIP_WEIGHTS),
                "currentLocationId": location,
                "responsibleWorkerId": worker,
                "parentAssetId": parent,
                "costCode": f"KST-{(1 + int(roll() * 60)) * 100:04d}",
                "purchasePrice": price_value,
                "purchaseCurrency": currency,
                "purchaseDate": bought.isoformat(),
                "purchaseOrderNumber": f"PO-{bought.year}-{1 + int(order_roll * 1e6) % 99_999:05d}"
                if order_roll < 0.7
                else None,
                "vendor": "Hilti" if maker == "Hilti" else vendor,
                "labels": labels,
            }
            age = timedelta(milliseconds=1 + int(roll() * _SEED_WINDOW_MS))
            self._put_seeded("assets", record, self.now - age)
            if is_storage:
                storage_ids.append(record["id"])
                storage_home[record["id"]] = location

    # -- reading --------------------------------------------------------------------------------------------

    def count(self, resource: str) -> int:
        """How many records of ``resource`` the tenant holds."""
        with self._lock:
            return len(self._records[resource])

    def counts(self) -> dict[str, int]:
        """Record counts per resource, e.g. ``{"workers": 25, "locations": 12, "assets": 1500}``."""
        with self._lock:
            return {name: len(self._records[name]) for name in RESOURCES}

    def get(self, resource: str, record_id: str) -> dict[str, Any] | None:
        """A copy of one record, or ``None`` when it does not exist."""
        with self._lock:
            record = self._records[resource].get(record_id)
            return _copy(record) if record is not None else None

    def all(self, resource: str) -> list[dict[str, Any]]:
        """Copies of every record of ``resource``, ordered by id."""
        with self._lock:
            return [_copy(self._records[resource][rid]) for rid in self._ids[resource]]

    def list_page(
        self,
        resource: str,
        page: int,
        page_size: int,
        start: datetime | None = None,
        end: datetime | None = None,
    ) -> tuple[list[dict[str, Any]], int]:
        """One page (1-based) of records ordered by id, and how many records match in total.

        With ``start``/``end`` only records with ``start <= lastModifiedDate < end`` match.
        """
        with self._lock:
            ids = self._ids[resource] if start is None and end is None else self._window(resource, start, end)
            offset = (page - 1) * page_size
            table = self._records[resource]
            return [_copy(table[rid]) for rid in ids[offset : offset + page_size]], len(ids)

    def _window(self, resource: str, start: datetime | None, end: datetime | None) -> list[str]:
        index = self._by_date[resource]
        low = bisect.bisect_left(index, (start,)) if start is not None else 0
        high = bisect.bisect_left(index, (end,)) if end is not None else len(index)
        high = max(low, high)
        if low == 0 and high == len(index):
            return self._ids[resource]

        # Paging through one window asks for the same slice again and again: sort it once.
        version = self._version[resource]
        cached = self._window_cache.get(resource)
        if cached and cached[:3] == (version, low, high):
            return cached[3]

        ids = sorted(rid for _, rid in index[low:high])
        self._window_cache[resource] = (version, low, high, ids)
        return ids

    # -- writing --------------------------------------------------------------------------------------------

    def create(self, resource: str, body: dict[str, Any], origin: str = "UNITE") -> dict[str, Any]:
        """Validate and store a new record; returns the stored record. Raises ``ValidationError``."""
        if not isinstance(body, dict):
            raise ValidationError("Request body must be a JSON object")

        with self._lock:
            record = dict.fromkeys(FIELDS[resource])
            record.update(_client_fields(resource, body))
            record["id"] = self._new_id(resource)
            self._check(resource, record)

            if resource != "workers":
                self._next_ontrack_id += 1
                record["ontrackId"] = str(self._next_ontrack_id)
            if resource == "locations":
                record["origin"] = origin

            self._store(resource, record, is_new=True)
            return _copy(record)

    def update(self, resource: str, record_id: str, body: dict[str, Any]) -> dict[str, Any]:
        """Merge ``body`` into a stored record, validate and store it; always bumps lastModifiedDate."""
        if not isinstance(body, dict):
            raise ValidationError("Request body must be a JSON object")

        with self._lock:
            current = self._records[resource].get(record_id)
            if current is None:
                raise NotFoundError(f"{SINGULAR[resource].capitalize()} {record_id} not found")

            record = dict(current)
            record.update(_client_fields(resource, body))
            self._check(resource, record)
            self._store(resource, record, is_new=False)
            return _copy(record)

    def _new_id(self, resource: str) -> str:
        while True:
            candidate = str(uuid.uuid4())
            if candidate not in self._records[resource]:
                return candidate

    def _store(self, resource: str, record: dict[str, Any], is_new: bool) -> None:
        rid = record["id"]
        moment = truncate_ms(self.clock())
        record["lastModifiedDate"] = format_timestamp(moment)
        if isinstance(record.get("labels"), list):
            record["labels"] = list(record["labels"])

        if is_new:
            bisect.insort(self._ids[resource], rid)
        else:
            old = (self._dates[resource][rid], rid)
            index = self._by_date[resource]
            del index[bisect.bisect_left(index, old)]

        bisect.insort(self._by_date[resource], (moment, rid))
        self._dates[resource][rid] = moment
        self._records[resource][rid] = record
        self._version[resource] += 1

    # -- validation -----------------------------------------------------------------------------------------

    def validate(self, resource: str, record: dict[str, Any]) -> list[dict[str, str]]:
        """Every rule ``record`` breaks, as ``{"field", "message"}`` details (empty when valid)."""
        with self._lock:
            return self._problems(resource, record)

    def _check(self, resource: str, record: dict[str, Any]) -> None:
        details = self._problems(resource, record)
        if details:
            noun = SINGULAR[resource]
            raise ValidationError(f"Validation failed for {noun}: {len(details)} error(s)", details)

    def _problems(self, resource: str, record: dict[str, Any]) -> list[dict[str, str]]:
        details: list[dict[str, str]] = []

        def problem(field: str, message: str) -> None:
            details.append({"field": field, "message": message})

        kinds = FIELD_KINDS[resource]
        for field in FIELDS[resource]:
            value = record.get(field)
            if value is None or field in ("id", "lastModifiedDate"):
                continue

            kind = kinds.get(field, "str")
            if kind == "str" and not isinstance(value, str):
                problem(field, "must be a string")
            elif kind == "bool" and not isinstance(value, bool):
                problem(field, "must be a boolean")
            elif kind == "number" and (
                isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
            ):
                problem(field, "must be a number")
            elif kind == "labels" and (
                not isinstance(value, list) or not all(isinstance(item, str) for item in value)
            ):
                problem(field, "must be a list of strings")
            elif kind == "date" and not _is_iso_date(value):
                problem(field, "must be a date in the format YYYY-MM-DD")

        for field in REQUIRED[resource]:
            value = record.get(field)
            if value is None or (isinstance(value, str) and not value.strip()):
                problem(field, "must not be blank")

        for field, allowed in ENUMS[resource].items():
            value = record.get(field)
            if isinstance(value, str) and value not in allowed:
                problem(field, f"must be one of {', '.join(allowed)}")

        bad = {item["field"] for item in details}
        getattr(self, f"_rules_{resource}")(record, bad, problem)
        return details

    def _rules_workers(self, record: dict[str, Any], bad: set[str], problem: Any) -> None:
        email = record.get("email")
        if "email" not in bad and isinstance(email, str) and "@" not in email:
            problem("email", "must be a well-formed email address")

        if record.get("isUser") is True:
            for field in ("email", "roleId"):
                value = record.get(field)
                if field not in bad and (value is None or (isinstance(value, str) and not value.strip())):
                    problem(field, "is required when isUser is true")

    def _rules_locations(self, record: dict[str, Any], bad: set[str], problem: Any) -> None:
        manager = record.get("managerId")
        if "managerId" not in bad and _dangling(manager, self._records["workers"]):
            problem("managerId", f"worker {manager} does not exist")

    def _rules_assets(self, record: dict[str, Any], bad: set[str], problem: Any) -> None:
        assets = self._records["assets"]

        location = record.get("currentLocationId")
        if "currentLocationId" not in bad and _dangling(location, self._records["locations"]):
            problem("currentLocationId", f"location {location} does not exist")

        worker = record.get("responsibleWorkerId")
        workers = self._records["workers"]
        if "responsibleWorkerId" not in bad and isinstance(worker, str) and worker not in workers:
            problem("responsibleWorkerId", f"worker {worker} does not exist")

        parent = record.get("parentAssetId")
        if "parentAssetId" not in bad and isinstance(parent, str):
            target = assets.get(parent)
            if target is None:
                problem("parentAssetId", f"asset {parent} does not exist")
            elif target.get("assetType") != "STORAGE_ASSET":
                problem("parentAssetId", f"asset {parent} is not a storage asset")
            elif self._would_nest_in_itself(record["id"], parent):
                problem("parentAssetId", "a storage asset cannot be placed inside itself")

        # A storage asset that still holds assets must stay a storage asset.
        stored = assets.get(record["id"])
        if (
            "assetType" not in bad
            and stored is not None
            and stored.get("assetType") == "STORAGE_ASSET"
            and record.get("assetType") != "STORAGE_ASSET"
        ):
            held = sum(1 for other in assets.values() if other.get("parentAssetId") == record["id"])
            if held:
                problem("assetType", f"storage asset still holds {held} asset(s)")

    def _would_nest_in_itself(self, record_id: str, parent: str) -> bool:
        seen = 0
        current: str | None = parent
        while current is not None and seen <= len(self._records["assets"]):
            if current == record_id:
                return True
            holder = self._records["assets"].get(current)
            current = holder.get("parentAssetId") if holder else None
            seen += 1

        return False

    # -- transfers ------------------------------------------------------------------------------------------

    def transfer(self, body: Any, completion_delay: float = 0.0) -> dict[str, Any]:
        """Move assets to a location, a worker or into a storage asset; returns the transfer.

        A transfer is ``IN_TRANSIT`` until ``completion_delay`` seconds have passed, then ``COMPLETED``;
        the assets move at once either way.
        """
        if not isinstance(body, dict):
            raise ValidationError("Request body must be a JSON object")

        with self._lock:
            asset_ids, target_field, target, details = self._check_transfer(body)
            if details:
                raise ValidationError(f"Transfer rejected: {len(details)} error(s)", details)

            moment = self.clock()
            given_date = body.get("transferDate")
            transfer_date = parse_timestamp(given_date) if given_date is not None else moment
            for asset_id in asset_ids:
                record = dict(self._records["assets"][asset_id])
                if target_field == "toLocationId":
                    # Leaving for another place takes the asset out of whatever held it.
                    record["currentLocationId"] = target
                    record["parentAssetId"] = None
                elif target_field == "toWorkerId":
                    record["responsibleWorkerId"] = target
                else:
                    record["parentAssetId"] = target
                    record["currentLocationId"] = self._records["assets"][target]["currentLocationId"]
                self._store("assets", record, is_new=False)

            transfer_id = str(uuid.uuid4())
            self._transfers[transfer_id] = {
                "transferId": transfer_id,
                "assetIds": list(asset_ids),
                "toLocationId": target if target_field == "toLocationId" else None,
                "toWorkerId": target if target_field == "toWorkerId" else None,
                "toStorageAssetId": target if target_field == "toStorageAssetId" else None,
                "transferDate": format_timestamp(transfer_date),
                "note": body.get("note"),
                "createdDate": format_timestamp(moment),
                "_completes_at": time.monotonic() + max(0.0, completion_delay),
            }
            return self.get_transfer(transfer_id) or {}

    def get_transfer(self, transfer_id: str) -> dict[str, Any] | None:
        """The transfer with its current status, or ``None``."""
        with self._lock:
            stored = self._transfers.get(transfer_id)
            if stored is None:
                return None

            done = time.monotonic() >= stored["_completes_at"]
            view = {key: value for key, value in stored.items() if not key.startswith("_")}
            view["status"] = "COMPLETED" if done else "IN_TRANSIT"
            view["assetIds"] = list(view["assetIds"])
            return view

    def _check_transfer(self, body: dict[str, Any]) -> tuple[list[str], str, str, list[dict[str, str]]]:
        details: list[dict[str, str]] = []
        assets = self._records["assets"]

        def problem(field: str, message: str) -> None:
            details.append({"field": field, "message": message})

        asset_ids = body.get("assetIds")
        if not isinstance(asset_ids, list) or not asset_ids:
            problem("assetIds", "must be a non-empty list of asset ids")
            asset_ids = []
        elif not all(isinstance(item, str) for item in asset_ids):
            problem("assetIds", "must contain only strings")
            asset_ids = []
        else:
            if len(set(asset_ids)) != len(asset_ids):
                problem("assetIds", "must not contain duplicates")
            for asset_id in asset_ids:
                if asset_id not in assets:
                    problem("assetIds", f"asset {asset_id} does not exist")

        given = [field for field in TRANSFER_TARGETS if body.get(field) is not None]
        target_field, target = "", ""
        if len(given) != 1:
            problem("toLocationId", "exactly one of toLocationId, toWorkerId, toStorageAssetId must be given")
        else:
            target_field = given[0]
            target = body[target_field]
            if not isinstance(target, str):
                problem(target_field, "must be a string")
            elif target_field == "toLocationId" and target not in self._records["locations"]:
                problem(target_field, f"location {target} does not exist")
            elif target_field == "toWorkerId" and target not in self._records["workers"]:
                problem(target_field, f"worker {target} does not exist")
            elif target_field == "toStorageAssetId":
                holder = assets.get(target)
                if holder is None:
                    problem(target_field, f"asset {target} does not exist")
                elif holder.get("assetType") != "STORAGE_ASSET":
                    problem(target_field, f"asset {target} is not a storage asset")
                elif target in asset_ids or any(self._would_nest_in_itself(a, target) for a in asset_ids):
                    problem(target_field, "cannot move a storage asset into itself")

        transfer_date = body.get("transferDate")
        if transfer_date is not None:
            try:
                if not isinstance(transfer_date, str):
                    raise ValueError(transfer_date)
                parse_timestamp(transfer_date)
            except ValueError:
                problem("transferDate", "must be an ISO 8601 date-time")

        note = body.get("note")
        if note is not None and not isinstance(note, str):
            problem("note", "must be a string")

        return asset_ids, target_field, target, details


def _client_fields(resource: str, body: dict[str, Any]) -> dict[str, Any]:
    """The body without the fields the server owns."""
    owned = SERVER_FIELDS[resource]
    return {key: value for key, value in body.items() if key not in owned}


def _dangling(reference: Any, table: dict[str, Any]) -> bool:
    """True for a non-blank id string that names no record in ``table``."""
    return isinstance(reference, str) and bool(reference.strip()) and reference not in table


def _copy(record: dict[str, Any]) -> dict[str, Any]:
    copied = dict(record)
    if isinstance(copied.get("labels"), list):
        copied["labels"] = list(copied["labels"])
    return copied


def _is_iso_date(value: Any) -> bool:
    if not isinstance(value, str) or not re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
        return False

    try:
        date.fromisoformat(value)
    except ValueError:
        return False

    return True
