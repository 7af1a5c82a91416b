"""``make demo``: a small warehouse on simulated hardware, run by the reference OMS.

Two pick zones, a put wall and a pack station, each ``zone-agent run --simulate`` in its
own process on a private Mosquitto; the reference OMS routes the sample orders
(``examples/orders.json``) through them and simulated people pick, put and pack, with a
few mistakes on purpose. ``python -m agent.oms.demo --help`` for the options.

* ``site``: the node files and processes;
* ``people``: the simulated pickers, put-wall operator and packer;
* ``warehouse``: the run, its progress bars and the KPI table.
"""
