"""idle: placeholder, filled by the IMAP work in progress."""
