"""biip, imported without its GS1 company-prefix table.

biip decompresses two tables when ``biip.gs1_prefixes`` is imported (every parser imports
it): the GS1 prefix table (2 KB compressed, which country or range issued a number) and the
company-prefix table (128 KB of LZMA, ~20 MB of Python dicts once loaded, which company owns
a number). The scanners never use the company prefix: a scan is matched by its whole GTIN or
SSCC, never by its owner. So this module imports ``biip.gs1_prefixes`` from biip's own source
with the one statement that loads the company-prefix table replaced by an empty table; every
parser works as before and reports ``company_prefix=None`` ("not known"), as biip does for a
prefix outside its table. Everything else biip does (AIs, check digits, dates, GS1 Digital
Link, UPC-E) is unchanged.

Import biip through this module (``from devices.scanners.gs1lib import Gtin``), so the finder
is in place before biip's first import. When biip's source no longer has that statement
(another biip version) the module is imported unchanged: correct, only heavier, and
``company_prefix_table_loaded()`` says so (a test checks it).
"""

from __future__ import annotations

import ast
import importlib.abc
import importlib.machinery
import sys
from collections.abc import Sequence
from types import CodeType, ModuleType

_MODULE = "biip.gs1_prefixes"
_TABLE = "_GS1_COMPANY_PREFIX_TRIE"


def _without_company_table(tree: ast.Module) -> bool:
    """Replace ``_GS1_COMPANY_PREFIX_TRIE = json.loads(...)`` by ``= {}``; True if found."""
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target: ast.expr = node.targets[0]
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            target = node.target
        else:
            continue
        if isinstance(target, ast.Name) and target.id == _TABLE:
            node.value = ast.copy_location(ast.Dict(keys=[], values=[]), node)
            return True
    return False


class _Loader(importlib.machinery.SourceFileLoader):
    """biip's own source file, compiled with the company-prefix table left empty."""

    def get_code(self, fullname: str) -> CodeType | None:
        """The module's code object, from source (biip's .pyc would load the table)."""
        path = self.get_filename(fullname)
        source = self.get_data(path)
        tree = ast.parse(source, filename=path)
        if not _without_company_table(tree):
            return super().get_code(fullname)
        return compile(ast.fix_missing_locations(tree), path, "exec", dont_inherit=True)


class _Finder(importlib.abc.MetaPathFinder):
    """Finds ``biip.gs1_prefixes`` where Python would, and loads it with ``_Loader``."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        """The normal spec of ``biip.gs1_prefixes`` with our loader; None for anything else."""
        if fullname != _MODULE:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path, target)
        if spec is None or spec.origin is None or not spec.origin.endswith(".py"):
            return spec
        spec.loader = _Loader(fullname, spec.origin)
        return spec


def company_prefix_table_loaded() -> bool:
    """Whether biip's company-prefix table is in memory (it should not be, on a node)."""
    module = sys.modules.get(_MODULE)
    return module is not None and bool(getattr(module, _TABLE, None))


if _MODULE not in sys.modules and not any(isinstance(f, _Finder) for f in sys.meta_path):
    sys.meta_path.insert(0, _Finder())

# biip's names, imported only now that the finder is in place.
from biip import ParseConfig, ParseError  # noqa: E402
from biip.checksums import gs1_standard_check_digit  # noqa: E402
from biip.gs1_digital_link_uris import GS1DigitalLinkURI  # noqa: E402
from biip.gs1_messages import GS1Message  # noqa: E402
from biip.gtin import Gtin  # noqa: E402
from biip.upc import Upc  # noqa: E402

__all__ = [
    "GS1DigitalLinkURI",
    "GS1Message",
    "Gtin",
    "ParseConfig",
    "ParseError",
    "Upc",
    "company_prefix_table_loaded",
    "gs1_standard_check_digit",
]
