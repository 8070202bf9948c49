"""Orchard: raw web data in, a served chat model out. Shared code for every stage."""

__version__ = "0.1.0"
