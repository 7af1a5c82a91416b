"""Label (ZPL) and receipt (ESC/POS) printers for pack stations.

``base`` holds the print queue, the exactly-once rules and the status model shared by
``zpl`` (kind ``zpl_printer``) and ``escpos`` (kind ``escpos_printer``); ``sim`` holds their
TCP simulators.
"""
