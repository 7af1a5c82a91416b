"""Pick-to-light: slot lights, confirm/plus/minus buttons and quantity displays.

``base.LightBar`` is the API (``show``, ``off``, ``clear``, ``events``); ``gpio_slots``
wires slots straight to GPIO (LED or RGB LED, buttons, TM1637 display) and ``led_strip``
maps slots to LED ranges of a WS2812 strip on SPI. ``palette`` holds the colour-blind-safe
colours, blink patterns and named indications.
"""
