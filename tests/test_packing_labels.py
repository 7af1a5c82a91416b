"""Pack station: carrier labels as PDF, PNG or ZPL go to a printer that prints them, or the
order is refused with the reason; the station's own label on an IPP printer is rendered."""

from __future__ import annotations

import io
import random
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from pydantic import ValidationError

from agent.config import load_config
from agent.store import StoredTask
from agent.wire.codec import pack_local, unpack_local
from agent.workflows.base import Print, PrintLabel, Step
from agent.workflows.packing import PackCommand, PackingWorkflow, PackSettings
from agent.workflows.packing.labelling import LabelPrinter, LabelRouting
from devices.events import DeviceHealthChanged, Weight
from devices.printers.base import PrintResult
from devices.scanners.interpret import interpret
from tests.test_packing import ENV, GTIN_A, SSCC, order


def _pdf() -> bytes:
    # A carrier's label is about 100 KB: a 4x6 page of 1-bit noise compresses to that.
    noise = random.Random(7).randbytes((812 + 7) // 8 * 1218)
    out = io.BytesIO()
    Image.frombytes("1", (812, 1218), noise).save(out, "PDF", resolution=203.0)
    return out.getvalue()


def _png() -> bytes:
    out = io.BytesIO()
    Image.new("1", (812, 1218), 1).save(out, "PNG")
    return out.getvalue()


PDF, PNG = _pdf(), _png()
ZPL = b"^XA^FO50,50^A0N,60,60^FDPARCELFORCE 48^FS^XZ"
ZEBRA = LabelPrinter("zebra", "zpl_printer", frozenset({"zpl"}), "zpl")
DYMO = LabelPrinter("dymo", "ipp_printer", frozenset({"pdf", "png"}), "png", 300)
LASER = LabelPrinter("laser", "ipp_printer", frozenset({"pdf"}), "pdf")


def carrier(fmt: str, data: bytes, order_id: str = "o1") -> dict[str, Any]:
    body = order(order_id)
    del body["label"]
    body["carrier_label"] = {"format": fmt, "data": data}
    return body


class Station:
    """The workflow over given label printers, with a store that keeps each task's kind."""

    def __init__(
        self,
        printers: list[LabelPrinter],
        preferred: str | None = None,
        tasks: dict[str, tuple[str, bytes]] | None = None,
    ) -> None:
        routing = LabelRouting(printers, preferred)
        self.wf = PackingWorkflow(
            PackSettings(), label_printer=routing.own().name, scale="scale", labels=routing
        )
        self.tasks: dict[str, tuple[str, bytes]] = dict(tasks or {})
        self.events: list[tuple[str, Any]] = []
        self.actions: list[Any] = []
        self.now = 1000
        step = Step()
        rows = [StoredTask(i, kind, None, unpack_local(d)) for i, (kind, d) in self.tasks.items()]
        self.wf.restore(rows, step, self.now)
        self._apply(step)

    def _apply(self, step: Step) -> None:
        for task_id in step.unit.drops:
            self.tasks.pop(task_id, None)
        for task in step.unit.puts.values():
            self.tasks[task.id] = (task.kind, pack_local(task.data))
        self.events += [(e.name, e.body) for e in step.unit.events]
        self.actions += step.actions

    def command(self, body: dict[str, Any]) -> Any:
        self.now += 1
        step = Step()
        verdict = self.wf.on_command("pack", ENV, PackCommand.model_validate(body), step, self.now)
        self._apply(step)
        return verdict

    def feed(self, event: object) -> None:
        self.now += 100
        step = Step()
        self.wf.on_input(event, step, self.now)
        self._apply(step)

    def to_label(self) -> Print | PrintLabel:
        """Scan the order and its units, take the box, weigh: the label's print action."""
        for code in ("T-o1", GTIN_A, GTIN_A, "S2-CODE", "CONFIRM"):
            self.feed(interpret("scanner", code, None, at=0.0))
        self.feed(Weight("scale", 850.0, True))
        actions = [a for a in self.actions if isinstance(a, Print | PrintLabel)]
        assert len(actions) == 1, actions
        return actions[0]

    def names(self) -> list[str]:
        return [name for name, _ in self.events]


def test_a_pdf_label_goes_to_the_ipp_printer_byte_for_byte() -> None:
    s = Station([ZEBRA, DYMO])
    assert s.command(carrier("pdf", PDF)).status == "accepted"
    action = s.to_label()
    assert action == Print("dymo", "o1-label", PDF)
    s.feed(PrintResult("o1-label", True, None, 0.0))
    printed = dict(s.events)["label_printed"]
    assert (printed.printer, printed.source, printed.sscc) == ("dymo", "carrier", None)
    assert "packed" in s.names()


def test_zpl_goes_to_the_zebra_and_png_to_a_printer_that_takes_png() -> None:
    s = Station([LASER, ZEBRA, DYMO], preferred="laser")
    assert s.command(carrier("zpl", ZPL)).status == "accepted"
    assert s.to_label() == Print("zebra", "o1-label", ZPL)
    s = Station([LASER, ZEBRA, DYMO], preferred="laser")
    assert s.command(carrier("png", PNG)).status == "accepted"
    assert s.to_label() == Print("dymo", "o1-label", PNG)


@pytest.mark.parametrize(
    ("printers", "body", "words"),
    [
        ([ZEBRA], carrier("pdf", PDF), "the carrier label is PDF and no printer here prints it"),
        ([LASER], carrier("png", PNG), "laser (ipp_printer) prints pdf"),
        ([DYMO], {**order(), "label": None, "carrier_zpl": ZPL}, "is ZPL"),
    ],
)
def test_a_label_no_printer_here_prints_is_refused_with_the_reason(
    printers: list[LabelPrinter], body: dict[str, Any], words: str
) -> None:
    s = Station(printers)
    verdict = s.command(body)
    assert (verdict.status, verdict.reason) == ("rejected", "no_printer_for_format")
    assert words in verdict.detail
    assert s.wf.orders == {} and s.tasks == {}  # nothing kept


def test_own_label_on_an_ipp_printer_is_rendered_by_the_floor() -> None:
    s = Station([DYMO])
    assert s.command(order()).status == "accepted"
    action = s.to_label()
    assert isinstance(action, PrintLabel)
    assert (action.printer, action.job_id, action.fmt, action.dpi) == (
        "dymo",
        "o1-label",
        "png",
        300,
    )
    assert (action.label.sscc, action.label.name) == (SSCC, "Ann Smith")


def test_own_label_on_a_zebra_stays_zpl() -> None:
    s = Station([ZEBRA, DYMO])
    assert s.command(order()).status == "accepted"
    action = s.to_label()
    assert isinstance(action, Print) and action.printer == "zebra"
    assert action.data.startswith(b"^XA")


def test_the_carrier_document_is_stored_once_and_survives_a_restart() -> None:
    s = Station([DYMO])
    assert s.command(carrier("pdf", PDF)).status == "accepted"
    assert s.tasks["pack-doc:o1"][0] == "pack_label_doc"
    for code in ("T-o1", GTIN_A):
        s.feed(interpret("scanner", code, None, at=0.0))
    # The order is saved after every scan; the document is not written again.
    assert len(s.tasks["pack:o1"][1]) < 2000 and len(PDF) > 100_000
    restarted = Station([DYMO], tasks=s.tasks)
    for code in (GTIN_A, "S2-CODE", "CONFIRM"):
        restarted.feed(interpret("scanner", code, None, at=0.0))
    restarted.feed(Weight("scale", 850.0, True))
    assert [a for a in restarted.actions if isinstance(a, Print)] == [
        Print("dymo", "o1-label", PDF)
    ]
    restarted.feed(PrintResult("o1-label", True, None, 0.0))
    assert "pack-doc:o1" not in restarted.tasks and "pack:o1" not in restarted.tasks


def test_resent_and_cancelled_orders_keep_no_stale_document() -> None:
    s = Station([DYMO])
    assert s.command(carrier("pdf", PDF)).status == "accepted"
    assert s.command(carrier("pdf", PDF)).status == "accepted"  # the OMS resends
    assert s.command(order()).status == "accepted"  # an update: the station's own label now
    assert "pack-doc:o1" not in s.tasks
    assert s.command(carrier("png", PNG)).status == "accepted"
    step = Step()
    s.wf.on_command(
        "pack_cancel",
        ENV,
        s.wf.commands["pack_cancel"].model_validate({"orders": ["o1"]}),
        step,
        2000,
    )
    s._apply(step)
    assert s.tasks == {}


def test_the_ipp_printers_fault_delays_its_label() -> None:
    s = Station([ZEBRA, DYMO])
    assert s.command(carrier("pdf", PDF)).status == "accepted"
    s.to_label()
    s.feed(DeviceHealthChanged("zebra", "fault", "paper out"))
    assert "print_delayed" not in s.names()  # not the printer of this label
    s.feed(DeviceHealthChanged("dymo", "fault", "paper out"))
    delayed = dict(s.events)["print_delayed"]
    assert (delayed.printer, delayed.reason) == ("dymo", "printer fault: paper out")


@pytest.mark.parametrize(
    ("label", "words"),
    [
        ({"format": "pdf", "data": PNG}, "not a PDF"),
        ({"format": "png", "data": PDF}, "not a PNG"),
        ({"format": "zpl", "data": b"hello"}, "not a ZPL label"),
        ({"format": "gif", "data": b"GIF89a"}, "format"),
    ],
)
def test_carrier_label_data_must_be_what_its_format_says(label: dict[str, Any], words: str) -> None:
    with pytest.raises(ValidationError, match=words):
        PackCommand.model_validate({**carrier("pdf", PDF), "carrier_label": label})


def test_one_label_source_only() -> None:
    with pytest.raises(ValidationError, match="exactly one"):
        PackCommand.model_validate({**order(), "carrier_label": {"format": "pdf", "data": PDF}})


def test_a_pack_node_file_with_an_ipp_printer(tmp_path: Path) -> None:
    path = tmp_path / "pack.toml"
    path.write_text(
        'site = "s"\nnode = "pack-9"\nrole = "pack"\n'
        f'state_dir = "{tmp_path}"\n[broker]\nurls = ["mqtt://127.0.0.1:1883"]\n'
        '[[devices]]\nname = "scale"\nkind = "mt_sics"\nport = "/dev/ttyUSB0"\n'
        '[[devices]]\nname = "label"\nkind = "ipp_printer"\n'
        'url = "ipp://localhost:631/printers/dymo4xl"\nown_label = "png"\ndpi = 300\n'
    )
    config = load_config(path, env={})

    class Floor:
        kinds = {d.name: d.kind for d in config.devices}

        def locations(self) -> list[str]:
            return []

    wf = PackingWorkflow.from_config(config, Floor())
    assert wf.labels.printers == [
        DYMO.__class__("label", "ipp_printer", frozenset({"pdf", "png"}), "png", 300)
    ]


def test_a_carrier_pdf_over_64_kib_passes_the_wire_and_a_long_string_does_not() -> None:
    # Carriers' PDFs run past msgpack's default 64 KiB bin limit; strings keep theirs.
    from agent.errors import MessageRejected
    from agent.wire import codec
    from agent.wire.messages import COMMANDS

    big = PDF + b"%" + b"x" * (300_000 - len(PDF))
    payload = codec.encode(carrier("pdf", big), msg_id="m1", ts=1)
    _, decoded = codec.decode(payload, "pack", COMMANDS)
    assert isinstance(decoded, PackCommand) and decoded.carrier_label is not None
    assert decoded.carrier_label.data == big
    with pytest.raises(MessageRejected) as caught:
        codec.decode(
            codec.encode({**order(), "gift_note": "x" * 70_000}, msg_id="m2", ts=1),
            "pack",
            COMMANDS,
        )
    assert caught.value.reason == "bad_msgpack"


def test_the_screen_shows_the_printer_of_the_open_orders_label() -> None:
    s = Station([ZEBRA, DYMO])
    assert s.wf.snapshot()["devices"]["label_printer"] == "zebra"
    assert s.command(carrier("pdf", PDF)).status == "accepted"
    s.to_label()
    assert s.wf.snapshot()["devices"]["label_printer"] == "dymo"
