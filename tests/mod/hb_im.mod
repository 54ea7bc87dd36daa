COMMENT
Pospischil et al. 2008 slow non-inactivating K (M current), p; a test fixture written from the published
equations: p_inf = 1/(1 + exp(-(v+35)/10)), tau_p = taumax / (3.3 exp((v+35)/20) + exp(-(v+35)/20)),
tadj = 2.3^((celsius - 36)/10).
ENDCOMMENT

NEURON {
    SUFFIX hbim
    USEION k READ ek WRITE ik
    RANGE gbar, taumax, pinf, ptau
}

UNITS {
    (mA) = (milliamp)
    (mV) = (millivolt)
    (S) = (siemens)
}

PARAMETER {
    gbar = 4e-6 (S/cm2)
    taumax = 4000 (ms)
}

ASSIGNED {
    v (mV)
    ek (mV)
    ik (mA/cm2)
    celsius (degC)
    pinf
    ptau (ms)
}

STATE { p }

BREAKPOINT {
    SOLVE states METHOD cnexp
    ik = gbar * p * (v - ek)
}

INITIAL {
    rates(v)
    p = pinf
}

DERIVATIVE states {
    rates(v)
    p' = (pinf - p) / ptau
}

PROCEDURE rates(v (mV)) {
    LOCAL tadj
    UNITSOFF
    tadj = 2.3 ^ ((celsius - 36) / 10)
    pinf = 1 / (1 + exp(-(v + 35) / 10))
    ptau = taumax / (tadj * (3.3 * exp((v + 35) / 20) + exp(-(v + 35) / 20)))
    UNITSON
}
