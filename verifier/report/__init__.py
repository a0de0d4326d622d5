"""Rendering results: tables for people, JSON for machines."""
