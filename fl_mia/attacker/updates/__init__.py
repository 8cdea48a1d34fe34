"""Membership signals from the server's white-box view of each hospital's update."""
