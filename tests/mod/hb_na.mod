COMMENT
Pospischil et al. 2008 (Biol Cybern 99:427) fast Na, Traub-Miles kinetics shifted by vt; a test fixture
written from the published equations, to check channelzoo.models.pospischil_na gate by gate.
Rates as published are at 36 C; tadj = 3^((celsius - 36)/10) as in the authors' NEURON code.
ENDCOMMENT

NEURON {
    SUFFIX hbna
    USEION na READ ena WRITE ina
    RANGE gbar, vt, minf, hinf, mtau, htau
}

UNITS {
    (mA) = (milliamp)
    (mV) = (millivolt)
    (S) = (siemens)
}

PARAMETER {
    gbar = 0.05 (S/cm2)
    vt = -60 (mV)
}

ASSIGNED {
    v (mV)
    ena (mV)
    ina (mA/cm2)
    celsius (degC)
    minf
    hinf
    mtau (ms)
    htau (ms)
}

STATE { m h }

BREAKPOINT {
    SOLVE states METHOD cnexp
    ina = gbar * m * m * m * h * (v - ena)
}

INITIAL {
    rates(v)
    m = minf
    h = hinf
}

DERIVATIVE states {
    rates(v)
    m' = (minf - m) / mtau
    h' = (hinf - h) / htau
}

PROCEDURE rates(v (mV)) {
    LOCAL am, bm, ah, bh, tadj, v2
    UNITSOFF
    tadj = 3.0 ^ ((celsius - 36) / 10)
    v2 = v - vt
    am = 0.32 * vtrap(13 - v2, 4)
    bm = 0.28 * vtrap(v2 - 40, 5)
    ah = 0.128 * exp((17 - v2) / 18)
    bh = 4 / (1 + exp((40 - v2) / 5))
    minf = am / (am + bm)
    mtau = 1 / (tadj * (am + bm))
    hinf = ah / (ah + bh)
    htau = 1 / (tadj * (ah + bh))
    UNITSON
}

FUNCTION vtrap(x, y) {
    : x / (exp(x/y) - 1), with its limit y (1 - x/y/2) near x = 0
    if (fabs(x / y) < 1e-6) {
        vtrap = y * (1 - x / y / 2)
    } else {
        vtrap = x / (exp(x / y) - 1)
    }
}
