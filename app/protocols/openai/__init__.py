"""app/protocols/openai"""
