from cni_flannel.main import main; main()
