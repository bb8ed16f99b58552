"""squeezeforge.hw"""
