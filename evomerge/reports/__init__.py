"""What a person reads after (or during) a search: the run report (`report`), benchmark tables (`table`) and the
live status view (`watch`)."""
