"""
The peers C{make bench --peers} measures streamrelay against: a streaming
proxy in front of a streaming backend each, the backend hashing the body
with SHA-256 as it arrives and storing it (optionally fsynced before its
answer).  L{aiohttprelay} and L{tornadorelay} are programs of their own
(C{python aiohttprelay.py backend|proxy ...}); L{nginxrelay} writes the
configurations of Debian's nginx.
"""
