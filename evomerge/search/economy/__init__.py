"""Spending less per candidate: subset fitness and racing as policies, and replaying a full run under them."""
