"""Hardware drivers: scanners, pick-to-light, scales and label printers.

Drivers import nothing from ``agent`` (their errors are ``devices.errors``); vendor
libraries (gpiozero pins, pyserial, python-escpos, evdev) are imported only under
``devices/backends``.
"""
