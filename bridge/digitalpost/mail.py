"""MeMo <-> Internet mail: the message a mail client shows for a MeMo, and the MeMo a mail becomes.

The one import for the rest of the bridge (`core.service`, tests); the work is done in:

    tomail.py       `memo_to_mail()` (delivering a MeMo to a mailbox: the MIME structure, the
                    text body with the actions, calendar invitations, memo.xml attached) and
                    `memo_keywords()` (the IMAP keywords `$Mandatory`, `$LegalNotice`)
    frommail.py     `mail_to_memo()` (any message submitted over SMTP)
    memoheaders.py  the `X-MeMo-*` header naming scheme: `memo_headers()` and its reverse
    values.py       MeMo values as text (shared with `xml.py`)

Pure: no database, no network, no clock (times are arguments).
"""

from __future__ import annotations

from bridge.digitalpost.frommail import (DEFAULT_LANGUAGE, LABEL_MAX, NO_SUBJECT, NOTIFICATION_MAX,
                                         TEXT_MAX, mail_to_memo)
from bridge.digitalpost.memoheaders import (DOCUMENT_HEADER, DOCUMENT_ID_HEADER, HEADER_PREFIX,
                                            memo_headers)
from bridge.digitalpost.tomail import (KEYWORD_LEGAL_NOTICE, KEYWORD_MANDATORY, MEMO_FILENAME,
                                       memo_keywords, memo_to_mail)

__all__ = ["DEFAULT_LANGUAGE", "DOCUMENT_HEADER", "DOCUMENT_ID_HEADER", "HEADER_PREFIX",
           "KEYWORD_LEGAL_NOTICE", "KEYWORD_MANDATORY", "LABEL_MAX", "MEMO_FILENAME", "NO_SUBJECT",
           "NOTIFICATION_MAX", "TEXT_MAX", "mail_to_memo", "memo_headers", "memo_keywords",
           "memo_to_mail"]
