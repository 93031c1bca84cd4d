"""Triggers that wait on ON!Track in the triggerer, without holding a worker slot."""
