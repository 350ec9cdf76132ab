# uWSGI build description of the tornado loop engine.
#
# uWSGI runs this file in two kinds of build:
# - embedded (UWSGI_EMBED_PLUGINS="tornado=<this dir>,greenlet" with
#   `pip install uwsgi` or `python uwsgiconfig.py --build`), from the uWSGI
#   source tree: plugins/python is relative to it;
# - `uwsgi --build-plugin "<this dir> tornado"`, from anywhere: UWSGI_SOURCE
#   names a uWSGI source tree of the binary's version for plugins/python.
#
# When pypy3 runs the build (pyimpl.h says what differs): an embedded build
# compiles only the loader (pypy_loader.c), and `uwsgi --build-plugin`
# compiles the engine with pypy.c, -DTW_PYPY and libpypy, the shared object
# the loader opens (the Makefile names it tornado_pypy_plugin.so).
import os
import platform
import shutil
import sys
import sysconfig

NAME = 'tornado'
SOURCES = ['plugin', 'guard', 'event', 'calls', 'loop', 'hooks', 'signals', 'deadlines', 'framing', 'keepalive', 'metrics', 'websocket']
PYPY = platform.python_implementation() == 'PyPy'
# CPython only: what reaches into the python plugin (its apps' subhandlers, `up`)
if not PYPY:
    SOURCES += ['asgi', 'environ', 'response']

# pip installs greenlet.h under <prefix>/include/site/pythonX.Y/greenlet/
site_include = os.path.join(sys.prefix, 'include', 'site', 'python%d.%d' % sys.version_info[:2])
paths = [sysconfig.get_path('include'), sysconfig.get_path('platinclude'), site_include,
         os.path.join(os.environ.get('UWSGI_SOURCE', '.'), 'plugins', 'python')]

CFLAGS = ['-I' + path for path in paths] + ['-Wall', '-Werror']
LDFLAGS = []
LIBS = []
if PYPY:
    SOURCES = SOURCES + ['pypy']
    CFLAGS.append('-DTW_PYPY')
    LIBS.append('-l:' + (sysconfig.get_config_var('LDLIBRARY') or 'libpypy3-c.so'))
GCC_LIST = SOURCES


def embedded_path():
    """This directory when UWSGI_EMBED_PLUGINS names it, as uwsgiconfig.py
    resolves it; None in other builds."""
    for item in os.environ.get('UWSGI_EMBED_PLUGINS', '').split(','):
        name, _, path = item.partition('=')
        if name.strip() == NAME and path.strip():
            return os.path.abspath(path.strip()).rstrip('/')
    return None


here = embedded_path()
if here:
    # uWSGI's greenlet plugin, compiled after this one in the same build,
    # does not search site_include: CPATH is gcc's own list of include
    # directories, inherited by every compiler run this build starts from now on.
    if os.path.isdir(site_include):
        os.environ['CPATH'] = os.pathsep.join(filter(None, [site_include, os.environ.get('CPATH')]))
    # An embedded build writes <source>.o next to each source and reuses it
    # when it looks newer. Compile fresh copies inside the uWSGI tree being
    # built instead: the checkout gets no object files, and a build for
    # another Python never links objects compiled for the previous one.
    copy = os.path.join(os.getcwd(), 'tornado_plugin_build')
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(here, copy, ignore=shutil.ignore_patterns('*.o', '__pycache__'))
    # uwsgiconfig.py compiles <here>/<entry>.c, which the kernel resolves from
    # the real directory
    if PYPY:
        SOURCES, CFLAGS, LIBS = ['pypy_loader'], ['-Wall', '-Werror'], []
    GCC_LIST = [os.path.relpath(os.path.join(copy, source), os.path.realpath(here)) for source in SOURCES]


def plugin_dir():
    """Where this build compiles the sources: the copy of an embedded build,
    else the directory uwsgiconfig.py was given (--plugin/--extra-plugin DIR,
    which `uwsgi --build-plugin` passes)."""
    if here:
        return copy
    for option in ('--extra-plugin', '-x', '--plugin', '-p'):
        if option in sys.argv[:-1]:
            return os.path.abspath(sys.argv[sys.argv.index(option) + 1])
    return os.getcwd()


def embed_python(directory, name, symbol):
    """<name>.py as a C string constant in <name>_py.h, so that the plugin
    carries its Python code (loop.c includes it)."""
    with open(os.path.join(directory, name + '.py')) as f:
        text = f.read()
    out = ['/* generated from %s.py by uwsgiplugin.py at build time: do not edit */' % name,
           'static const char %s[] =' % symbol]
    for line in text.splitlines(True):
        out.append('\t"%s"' % line.replace('\\', '\\\\').replace('"', '\\"').replace('\n', '\\n'))
    out[-1] += ';'
    with open(os.path.join(directory, name + '_py.h'), 'w') as f:
        f.write('\n'.join(out) + '\n')


embed_python(plugin_dir(), 'tw_worker', 'tw_worker_py')
