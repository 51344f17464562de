"""pushes"""
