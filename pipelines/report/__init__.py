"""What Safewatch shows people: terminal tables (`text`) and the weekly safety-posture report
(`weekly`: read, built, rendered from templates, written).
"""
