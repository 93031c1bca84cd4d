"""Sensors that wait for something to happen in ON!Track: an asset's state, changes, a transfer."""
