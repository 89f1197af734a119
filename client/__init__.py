"""Client library for sessionquorum."""
