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
    # A billfold id whose random part has a run of digits is still an id, not a phone.
    assert redacted_path("/v1/users/usr_0123456789abcdefghjkmnpqrs/top-ups") == (
        "/v1/users/usr_0123456789abcdefghjkmnpqrs/top-ups"
    )
    # An external id made of a phone number is hidden, prefixed or not.
    assert redacted_path("/v1/users/ext_13800138000") == "/v1/users/(redacted)"
    assert redacted_path("/v1/users/13800138000abcdefghjkmnpqrstv") == "/v1/users/(redacted)"
