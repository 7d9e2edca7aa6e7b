from routing.request_id import accept_or_new, valid_request_id


def test_valid_ids_are_kept_and_others_replaced():
    assert accept_or_new("abc-123:x.y_z") == "abc-123:x.y_z"
    assert accept_or_new("  padded ") == "padded"
    for bad in [None, "", "has space", "x" * 129, "semi;colon", "é", "o\nk"]:
        new = accept_or_new(bad)
        assert new != bad and len(new) == 32 and valid_request_id(new)


def test_two_new_ids_differ():
    assert accept_or_new(None) != accept_or_new(None)
