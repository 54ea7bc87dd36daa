COMMENT
Pospischil et al. 2008 delayed-rectifier K (Traub-Miles), n^4, shifted by vt; a test fixture written
from the published equations. tadj = 3^((celsius - 36)/10).
ENDCOMMENT

NEURON {
    SUFFIX hbkd
    USEION k READ ek WRITE ik
    RANGE gbar, vt, ninf, ntau
}

UNITS {
    (mA) = (milliamp)
    (mV) = (millivolt)
    (S) = (siemens)
}

PARAMETER {
    gbar = 0.005 (S/cm2)
    vt = -60 (mV)
}

ASSIGNED {
    v (mV)
    ek (mV)
    ik (mA/cm2)
    celsius (degC)
    ninf
    ntau (ms)
}

STATE { n }

BREAKPOINT {
    SOLVE states METHOD cnexp
    ik = gbar * n * n * n * n * (v - ek)
}

INITIAL {
    rates(v)
    n = ninf
}

DERIVATIVE states {
    rates(v)
    n' = (ninf - n) / ntau
}

PROCEDURE rates(v (mV)) {
    LOCAL an, bn, tadj, v2
    UNITSOFF
    tadj = 3.0 ^ ((celsius - 36) / 10)
    v2 = v - vt
    an = 0.032 * vtrap(15 - v2, 5)
    bn = 0.5 * exp((10 - v2) / 40)
    ninf = an / (an + bn)
    ntau = 1 / (tadj * (an + bn))
    UNITSON
}

FUNCTION vtrap(x, y) {
    if (fabs(x / y) < 1e-6) {
        vtrap = y * (1 - x / y / 2)
    } else {
        vtrap = x / (exp(x / y) - 1)
    }
}
