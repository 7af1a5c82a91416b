"""Hardware drivers: scanners, pick-to-light, scales and label printers.

Drivers import nothing from ``agent`` except ``agent.errors``; vendor libraries (gpiozero
pins, pyserial, python-escpos, evdev) are imported only under ``devices/backends``.
"""
