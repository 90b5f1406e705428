"""Tests of the hsm package against real SoftHSM2 tokens."""
