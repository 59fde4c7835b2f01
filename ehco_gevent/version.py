"""Version strings shown by ``ehco --version``, the web index and the relay sync POST.

Kept in a module with no imports so setup.py can read it before dependencies exist.
"""

VERSION = "1.1.4-dev"
#: Which implementation answered; ehco's own build info carries a git branch here.
GIT_BRANCH = "ehco-gevent"
