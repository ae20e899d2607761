"""Rendering of what Safewatch shows people: terminal tables now, the weekly report later."""
