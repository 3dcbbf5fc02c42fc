"""What the request log writes."""

from __future__ import annotations


def test_paths_are_logged_without_what_looks_like_personal_data() -> None:
    from billfold.api.middleware import redacted_path

    assert redacted_path("/v1/users/ana@example.com/balance") == "/v1/users/(redacted)/balance"
    assert redacted_path("/v1/users/+86 138 0013 8000") == "/v1/users/(redacted)"
    assert redacted_path("/v1/users/usr_01m8rj9g4nan5snarbyxhdzqf5") == (
        "/v1/users/usr_01m8rj9g4nan5snarbyxhdzqf5"
    )
    assert redacted_path("/v1/invoices/inv_2026/pay") == "/v1/invoices/inv_2026/pay"
