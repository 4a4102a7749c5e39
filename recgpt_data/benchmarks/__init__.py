"""Benchmarks in P5's protocol (Amazon Beauty, Sports and Outdoors, Toys and Games, Yelp 2019): splits
built from raw data or loaded from P5's own files, and their test prompts."""
