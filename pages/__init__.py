"""The pages of DSV Studio: one module per page, each a thin function over dsvlib calls."""
