print("ftctl")
