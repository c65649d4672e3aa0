"""Servers a user would otherwise run for the same work, for `python -m bench peers`: each serves
``POST /generate?n=N&seed=S&format=png`` from a store's SavedModel as one PNG grid, like genserve does."""
