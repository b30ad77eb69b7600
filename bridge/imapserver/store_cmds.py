"""store_cmds: placeholder, filled by the IMAP work in progress."""
