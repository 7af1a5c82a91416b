"""Scales for pack stations: serial (MT-SICS, Toledo 8217, NCI) and USB HID shipping scales.

``base`` holds what every driver shares (``Scale``, ``ScaleConfig``, ``Reading``, the scale
errors); one module per protocol holds its config, driver and simulator; ``sim`` the
byte-exact pty simulators; ``hid_pos`` the USB HID scale (report decoder and driver) and
``hid_sim`` its simulator; ``probe`` identifies which protocol answers on a port and
which USB HID scales are plugged in.
"""
