"""Digital Post adapter: the MeMo message format (model.py, xml.py); no database, no network.

    from bridge.digitalpost import parse_memo, write_memo, validate, MemoInvalid, model
"""

from bridge.digitalpost import model
from bridge.digitalpost.xml import MemoInvalid, ValidationError, parse_memo, validate, write_memo

__all__ = ["MemoInvalid", "ValidationError", "model", "parse_memo", "validate", "write_memo"]
