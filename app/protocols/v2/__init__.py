"""app/protocols/v2"""
