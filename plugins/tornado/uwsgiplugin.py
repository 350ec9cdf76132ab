# uWSGI build description of the tornado loop engine.
# The build runs from the uWSGI source tree (embedded build or
# `uwsgi --build-plugin`), so plugins/python is relative to it; UWSGI_SOURCE
# names that tree when building from elsewhere.
import os
import sys
import sysconfig

NAME = 'tornado'

paths = [sysconfig.get_path('include'), sysconfig.get_path('platinclude')]
# pip installs greenlet.h under <prefix>/include/site/pythonX.Y/greenlet/
paths.append(os.path.join(sys.prefix, 'include', 'site', 'python%d.%d' % sys.version_info[:2]))
source = os.environ.get('UWSGI_SOURCE', '.')
paths.append(os.path.join(source, 'plugins', 'python'))

CFLAGS = ['-I' + path for path in paths] + ['-Wall', '-Werror']
LDFLAGS = []
LIBS = []

GCC_LIST = ['plugin', 'event', 'loop', 'hooks', 'signals', 'deadlines', 'keepalive']
