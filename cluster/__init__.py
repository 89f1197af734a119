"""Cluster tools for sessionquorum: a local launcher, fault injection and checks."""
