"""The first module the forkserver of :func:`petcorpus._procs.process_pool` imports.

Importing it is what it does: before the other preloads, it removes the current directory
(and the driver's script folder) from ``sys.path``, restores the environment the driver
has and ties the forkserver's life to its driver's. It acts only in a forkserver that
``process_pool`` started (which passes it its settings in the environment); imported
anywhere else it does nothing.
"""

from petcorpus._procs import prepare_forkserver

prepare_forkserver()
