"""Background work: expiries, retention and (later) renewals and bill runs."""
