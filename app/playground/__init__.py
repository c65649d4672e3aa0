"""The playground: one page, served by the service itself, for trying its models in a browser."""
