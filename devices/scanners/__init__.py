"""Barcode scanner drivers.

* ``serial_scanner``: RS-232 / USB-CDC scanners (the mode to use for GS1 codes).
* ``hid_scanner``: keyboard-wedge scanners through evdev (the ``hid`` extra).
* ``framing``: terminators, prefix/suffix, AIM identifiers, de-duplication, shared by both.
* ``interpret``: what a read means (GTIN, SSCC, GS1 element strings, plain text, errors).

Each driver module also holds its simulator (``SIMULATOR``), as the registry expects.
"""
