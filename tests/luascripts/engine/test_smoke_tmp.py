def test_x():
    import luascripts.engine
