"""The package's version: one place, read by ``__init__`` and by what records it (``devices.measured``)."""
__version__ = '0.6.0'
