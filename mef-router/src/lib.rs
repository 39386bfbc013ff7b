//! MEF router: the in-network fair-rate controller, fair egress scheduler and policer.
