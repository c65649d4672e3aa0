"""app/protocols/tfserving"""
