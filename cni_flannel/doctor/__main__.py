"""python -m cni_flannel.doctor (the same command as ``cni-flannel doctor``)."""

from cni_flannel.doctor.cli import doctor

doctor.main(prog_name="cni-flannel doctor")
