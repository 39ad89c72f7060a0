"""host-local IPAM: range sets, the allocator, and the stores it runs over.

``config``     parse + validate the ipam section (pure)
``store``      the Store interface and an in-memory fake
``disk``       the reference's on-disk store (one file per address, flock)
``allocator``  round-robin allocation and release over a Store (pure logic)
``resolv``     resolv.conf -> DNS, as the reference reads it
``host_local`` the library API the plugins call in-process
"""
