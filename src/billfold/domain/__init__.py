"""The pure core: money, ledger rules and (later) pricing. No I/O, no clock, no ORM."""
