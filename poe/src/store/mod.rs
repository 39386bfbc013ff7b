//! (to be written: see docs/POE.md, module contracts)
