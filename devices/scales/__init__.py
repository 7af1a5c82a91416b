"""Serial scales for pack stations: MT-SICS, Mettler-Toledo 8217 and NCI / Weigh-Tronix.

``base`` holds what every driver shares (``Scale``, ``ScaleConfig``, the scale errors);
one module per protocol holds its config, driver and simulator; ``sim`` the byte-exact
pty simulators; ``probe`` identifies which protocol answers on a port.
"""
