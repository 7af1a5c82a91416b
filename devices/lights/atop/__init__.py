"""ATOP AblePick pick-to-light controllers (kind ``atop``).

``codec`` builds and parses the CCBs, ``config`` is the node-file table, ``driver`` keeps
one TCP connection per controller (and names the kind's ``CONFIG``, ``DRIVER`` and
``SIMULATOR`` for ``devices.registry``), ``sim`` plays a controller and its tags.
"""
